"""The layer between the web page and the engine: who a visitor is, and what they may use and cost.

Nothing here imports gradio (ui/ wires it); the engine never imports this package.

- `visitors`: a visitor's key and workspace, their folders, the runs they see, their quota;
- `boundary`: the one place where what a web visitor sends becomes what they may use (their own uploads,
  weights and runs by name, never a path; every string bounded before it is echoed or logged);
- `ledger`: every byte a request writes, counted against the visitor's quota and the server's cap before it
  is written;
- `fairqueue`: lanes of work with per-visitor and per-address shares;
- `sharing`: identical runs computed once, keyed by the content of every input, never across owners'
  private inputs;
- `addresses`: the client's address, believing X-Forwarded-For only from trusted proxies.
"""
