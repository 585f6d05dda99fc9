"""Delivery: accepting submissions, the outbound queue, and inbound acceptance from peers."""
