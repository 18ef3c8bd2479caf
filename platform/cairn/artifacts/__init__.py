"""Artifacts and their lineage: the store, ancestry walks, database queries, graphs and the audit.

| module | holds |
|---|---|
| `store.py` | the artifact store: sealing (atomic, manifest last), verifying, local copies, sources |
| `ancestry.py` | an artifact's ancestry rebuilt from sealed manifests alone (what `ctx.ancestry` gives) |
| `queries.py` | lineage as Cairn's database records it: ancestry trees, what ancestors cost |
| `graphs.py` | nested trees and flat {nodes, edges} graphs, Graphviz and Mermaid |
| `audit.py` | `cairn audit`: a release bundle verified with nothing but the bundle |
| `confined.py` | reading an untrusted folder (a bundle) without following links or leaving it |

Named `artifacts`, not `lineage`, because `cairn.lineage` is the public API's function.
"""
