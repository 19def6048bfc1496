"""The run catalog: an SQL index (SQLite by default, PostgreSQL for a team) of the runs the loggers
write under a root, rebuilt from the store at any time, searched with MLflow's filter syntax."""
