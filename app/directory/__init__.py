"""Reference data the routing policy is built from: units (the routing tree), enterprises,
categories, the routing rules and the calendar overrides. Every change is an event on the
entity's own stream; the tables here are their inline read models."""
