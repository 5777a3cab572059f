"""The runner core shared by the local, Lambda and Fargate sandboxes."""
