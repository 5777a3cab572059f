"""code-runner: a serverless platform that runs untrusted code."""
