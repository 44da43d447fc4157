"""`ocpp-gateway ctl`: a client of the admin API (`/api/v5`) for operators and scripts.

Where the API is and who we are: `--url` (default: the config's
`dashboard.listeners.http.bind`, 0.0.0.0 read as 127.0.0.1), `--user`/`--password`
(default: `OCPPGW_CTL_USER`/`OCPPGW_CTL_PASSWORD`, then the config's
`dashboard.default_username`/`default_password`); the config is the one `-c` names
(or `conf/gateway.conf`, with the `OCPPGW_*` overrides, as `run` reads it), and it is
only read when something is not given otherwise.

Output: readable tables and `key: value` lines, or with `--json` the API's JSON as
it came (a listing that spans several pages is fetched whole and printed in the
API's page shape with every item in `data`).

Exit codes: 0 success, 1 the API answered an error (`error: <code>: <message>` on
stderr), 2 a usage error, 3 the gateway cannot be reached.

The package, one idea a module: api (the HTTP client, its errors and exit codes),
target (where the API is, the credentials), output (tables, `key: value` lines),
node_commands / client_commands / user_commands / rule_commands (the commands by
API area), parser (the argparse wiring), dispatch (running a command).
"""

from engine.ctl.dispatch import run
from engine.ctl.parser import add_parser

__all__ = ["add_parser", "run"]
