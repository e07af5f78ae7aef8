"""How tellonce runs: settings, logging, Temporal wiring, the API, the CLI, the dev stack, the sandbox."""

import warnings

# asyncssh (SFTP for batch files) still imports DSA support, which cryptography 51 deprecates;
# tellonce never uses DSA keys, and the warning on every start would only alarm operators.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
