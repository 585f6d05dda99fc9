"""Operating a node: backup and restore, mail import and export."""
