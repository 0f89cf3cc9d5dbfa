"""Intake: the one wire schema for a job, file parsing, and writing jobs to the queue."""
