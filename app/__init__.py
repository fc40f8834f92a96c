"""Dispatchroom: an event-sourced routing service for the problems enterprises report to local
government (助企问题调度)."""

__version__ = "0.1.0"
