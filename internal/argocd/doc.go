// Package argocd tests the Argo CD health checks shipped in config/argocd:
// it runs the Lua scripts the way Argo CD does, against fixture objects.
package argocd
