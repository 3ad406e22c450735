"""Who may do what: principals and roles, API tokens, passwords, the server key.

One package used by the API, the access proxy and the operator commands, so
that a credential means the same thing wherever it is presented.
"""
