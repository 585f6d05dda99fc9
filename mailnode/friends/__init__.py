"""The friends' network: invites, friends' nodes bootstrapping each other, and relays that
hold sealed mail for a friend's users while their node is away.

Layout: ``invite`` (the token, sans-IO); ``service`` (redeeming, relaying, handing over and
pulling, on top of the transfer protocol's REDEEM, HOLD and PULL).
"""
