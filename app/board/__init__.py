"""The wall board (挂图作战) of the city command room and the district dispatch rooms: `/board`.

Server-rendered HTML and SVG (no CDN, no script library), fed by the same services as the
statistics API (`app.projections`), scoped like it, live through Server-Sent Events. See
`docs/board.md`.
"""
