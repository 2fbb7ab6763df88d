"""The metric-pipeline doctor: checks each hop from exporter to HPA and names the first that fails."""
