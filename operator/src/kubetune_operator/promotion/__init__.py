"""Adapter promotion by GitOps (docs/promotion.md).

`record.build_record` turns what the operator keeps in statuses into a promotion record;
`publish.promote` and `publish.rollback` commit records, and the vLLM multi-LoRA fragment
derived from them, to a Git repository; `kubetune promote` / `kubetune rollback` run them.
"""
