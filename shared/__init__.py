"""kqlwatch: runs Sentinel-format KQL rules on a schedule and posts new hits to Microsoft Teams."""
