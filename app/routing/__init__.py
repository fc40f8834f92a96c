"""Pure routing policy: the unit tree, the working-day calendar and deadlines, routing rules.

Nothing here touches HTTP or SQL; the data it works on is passed in.
"""
