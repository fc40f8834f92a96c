"""Ledgers (台账): importing the spreadsheets dispatch rooms keep, and exporting problems as one."""
