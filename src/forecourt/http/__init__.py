"""HTTP plumbing shared by every REST router: dependencies, problems, middleware."""
