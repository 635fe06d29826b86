"""Operator metrics (`metrics`) and the Grafana dashboards built from them (`dashboards`)."""
