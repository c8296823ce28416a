"""The admin listener (``serve --admin ADDR:PORT``): health, Prometheus metrics and the dashboard."""
