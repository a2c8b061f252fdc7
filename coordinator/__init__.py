"""The aggregation server and the data requester's side of a task."""
