"""Security tests: each tries one attack class and asserts the precise refusal."""
