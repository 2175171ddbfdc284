"""TOML configuration → frozen Settings (filterd/settings.py), with errors that
name the key (see each module's docstring).

    search.py    which file: --config, $FILTERD_CONFIG, then the default files
    load.py      the file read and checked, its root table, the checks across
                 tables, and the small tables ([keywords], [policy], [daemon])
    registry.py  [registry]: the url (embedded, redis, sentinel, cluster) and its limits
    smtp.py      [smtp] (the relay) and [dkim] (its signature)
    smpp.py      [smpp]: the upstream, numbers and confirmation texts
    cmpp.py      [cmpp]: the ISMG upstream, accounts (6-digit sp_id), numbers
    http.py      [http]: the listener and the unsubscribe tokens
    accounts.py  [[smtp.accounts]] and [[smpp.accounts]]: credentials, password
                 files, streams
    values.py    values several tables hold: endpoints, listener limits,
                 workers, networks, private files, confirmation texts
    table.py     a TOML table read key by key, and every key each table may hold

Only the composition roots (cli/, daemon/) import the loader; every other module
imports the settings types it needs.
"""
