"""The web console at ``/console``: pages for compliance officers, approvers and operators.

Server-rendered (Jinja2) over the same services and route functions the API
uses, so every button is the API call it names, with the signed-in
principal, audited the same way. `routes` is the HTTP edge; `sessions` the
sign-in and CSRF; `pages` assembles what each page shows.
"""
