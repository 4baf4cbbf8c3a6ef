// Package deploy holds Cohort's deployment material: the container image
// (Dockerfile), a docker-compose cluster, Kubernetes manifests (kubernetes/) and
// systemd units (systemd/). See README.md. The package has no code; its tests check
// statically that the compose file and the manifests are well-formed and agree with
// the flags `cohort` actually defines (cmd/cohort), since no Docker or Kubernetes is
// available where the tests run.
package deploy
