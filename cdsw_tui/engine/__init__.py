"""Snapshots, builders and runtimes: what turns a project's code into something that runs."""
