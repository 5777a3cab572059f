"""Use cases: submit, start, finish, cancel, reap. They take ports and return domain objects."""
