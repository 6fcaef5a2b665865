"""The state database: the only package that speaks SQL."""
