"""Where the operator acts: Kubernetes, or the local dev stack's processes."""
