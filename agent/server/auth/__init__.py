"""Who is calling the agent, and may they do this: delegated authentication and authorization.

The agent is root on the node, so it trusts nobody by default, as the kubelet does:
- identity (authn.py): a peer on the unix socket is root on the node (the socket is 0600 root);
  else a bearer token (`authorization: Bearer ...`), verified with a TokenReview (review.py) for
  audience `nsinspect`; else a client certificate (mTLS listeners): CN is the user, each O a group.
- permission (guard.py): a SubjectAccessReview on the target for that user, its uid, groups and
  extra, with the verbs of POLICY (policy.py), the one table of which RPC needs what.
`AuthInterceptor` (interceptor.py) authenticates every call but Health/Check (and turns undecodable
requests into INVALID_ARGUMENT), and refuses pending streams beyond their limits
(agent/server/admission.py); each handler asks its `Guard` about its target before touching
anything. Both cache briefly, fail closed when the API server cannot answer, and write one audit
line per call. config.py builds all of it from the agent's flags, with the TLS of TCP listeners.
Tokens are never logged, never cached as such (an HMAC of each under a per-process key), and
scrubbed from any message the API server returns.

It decides and never acts: nothing here touches a pod, a process or a namespace. Each name is
imported from the module that owns it; this package re-exports nothing.
"""
