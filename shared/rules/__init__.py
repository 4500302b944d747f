"""Rule files and the queries they become: pure, imports nothing from runtime, workbench or stand-ins."""
