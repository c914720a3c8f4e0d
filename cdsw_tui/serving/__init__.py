"""Serving: the gateway, the balancer, the supervisor and the replica runner."""
