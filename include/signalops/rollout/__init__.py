"""Closing the loop: outcomes of logged predictions, the canary rollout, rollback."""
