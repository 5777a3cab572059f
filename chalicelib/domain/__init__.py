"""The domain: jobs, their states and allowed transitions, limits, errors. No boto3, no I/O."""
