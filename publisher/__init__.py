"""Publishing the datasets' metadata to a national data catalogue (seed 004).

Not a source kind: it reads the store and the catalogue file and writes to the catalogue API.
``record`` maps a dataset to a catalogue record and checks it, ``merge_patch`` computes minimal
RFC 7396 patches, ``client`` talks to the API, ``publish`` ties them together per dataset.
"""
