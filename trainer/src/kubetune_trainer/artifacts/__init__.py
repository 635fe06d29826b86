"""Models as kubetune stores them, shared by training and evaluation.

- `lineage`: `kubetune.json` (contracts §6), the record of the base an adapter really belongs to;
- `materialize`: a local directory for a stored model (s3:// downloaded once per content version);
- `scratch`: the pod's scratch space those copies live in.
"""
