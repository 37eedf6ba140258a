"""The config: its schema (typed, every field documented and validated) and composing it from conf/."""
