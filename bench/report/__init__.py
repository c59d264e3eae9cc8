"""The report wing: run records -> tables (table.py), figures (figures.py), claims.md (claims.py) and a
sweep's findings.md (findings.py)."""
