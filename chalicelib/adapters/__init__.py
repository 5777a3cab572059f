"""Adapters: the only code that imports boto3 or talks to the outside world."""
