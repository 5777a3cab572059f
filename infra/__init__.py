"""code-runner's deployment: CloudFormation fragments merged into `chalice package` (see infra/DEPLOY.md)."""
