"""claims.md (`python -m bench claims`): verdicts.py holds each claim of the paper (method.md) with its
criterion and evaluates it on the records (supported, not supported, not run yet); markdown.py renders
the verdicts with their evidence and conditions and writes the file. markdown.py imports verdicts.py."""
