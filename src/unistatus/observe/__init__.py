"""Figures, alerts and dashboards: operation statistics, Prometheus metrics, alert rules, notifications, diagnose, the terminal and web dashboards."""
