"""The command line, the private local Ray cluster, and the default models' builder."""
