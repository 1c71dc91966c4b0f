package localcluster

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// ImageTag tags every image of the cluster. It is not "latest": for
// latest the kubelet's default pull policy is Always, and there is no
// registry to pull from.
const ImageTag = "dev"

// Image is a FROM-scratch image of one static binary, imported into every
// node's containerd instead of pulled.
type Image struct {
	// Ref is the image reference the pods name, e.g. "localhost/nodefw-agent:dev".
	Ref string
	// Package is the Go package of the binary, relative to the repository.
	Package string
	// Path is where the binary is in the image, and the entrypoint.
	Path string
	// User is the image's user, as Dockerfile's USER.
	User string
}

// The images of the cluster: the manager and the agent as the Dockerfile
// builds them (same entrypoints and users), the sandbox (pause) image and
// the test server for the pods of the end-to-end suite.
var (
	ManagerImage    = Image{Ref: "localhost/nodefw-manager:" + ImageTag, Package: "./cmd/manager", Path: "/manager", User: "65532:65532"}
	AgentImage      = Image{Ref: "localhost/nodefw-agent:" + ImageTag, Package: "./cmd/agent", Path: "/agent", User: "0:0"}
	PauseImage      = Image{Ref: "localhost/nodefw-pause:" + ImageTag, Package: "./hack/cluster/pause", Path: "/pause", User: "65535:65535"}
	TestServerImage = Image{Ref: "localhost/nodefw-testserver:" + ImageTag, Package: "./hack/cluster/testserver", Path: "/testserver", User: "65532:65532"}

	Images = []Image{ManagerImage, AgentImage, PauseImage, TestServerImage}
)

// BuildImages builds the static binary of each image from repoRoot and
// writes the image as a docker-archive (the `docker save` format, which
// `ctr images import` reads) into dir, one NAME.tar per image, unless the
// archive is newer than the binary. It returns the archives' paths in the
// order of images.
func BuildImages(ctx context.Context, repoRoot, dir string, images []Image) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var archives []string
	for _, img := range images {
		bin := filepath.Join(dir, strings.TrimPrefix(img.Path, "/"))
		// Static, as the Dockerfile builds them, but without -trimpath,
		// which would compile every dependency again rather than reuse the
		// packages `go build` and `go test` left in the build cache.
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", bin, img.Package)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("building %s: %v\n%s", img.Package, err, out)
		}
		path := filepath.Join(dir, imageFileName(img)+".tar")
		archives = append(archives, path)
		// go build leaves an up-to-date binary alone; so does this.
		if newer(path, bin) {
			continue
		}
		binary, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		archive, err := DockerArchive(img, binary)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		if err := os.WriteFile(path+".tmp", archive, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, err
		}
	}
	return archives, nil
}

// newer reports whether file a exists and was modified after file b.
func newer(a, b string) bool {
	ai, err := os.Stat(a)
	if err != nil {
		return false
	}
	bi, err := os.Stat(b)
	return err == nil && ai.ModTime().After(bi.ModTime())
}

// imageFileName is the image's repository base name: "nodefw-agent".
func imageFileName(img Image) string {
	name := img.Ref[strings.LastIndex(img.Ref, "/")+1:]
	return strings.SplitN(name, ":", 2)[0]
}

// epoch dates every file and the image itself, so that the same binary
// always makes the same image.
var epoch = time.Unix(0, 0).UTC()

// DockerArchive returns a docker-archive holding one image with one layer:
// binary at img.Path, executable, run as img.User.
func DockerArchive(img Image, binary []byte) ([]byte, error) {
	layer, err := tarFiles([]tarFile{{name: strings.TrimPrefix(img.Path, "/"), mode: 0o755, data: binary}})
	if err != nil {
		return nil, err
	}
	layerDigest := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(layerDigest[:])

	// The image configuration of the OCI image spec (which Docker's is).
	type runConfig struct {
		User       string   `json:"User,omitempty"`
		Env        []string `json:"Env"`
		Entrypoint []string `json:"Entrypoint"`
		WorkingDir string   `json:"WorkingDir"`
	}
	type rootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	type history struct {
		Created   time.Time `json:"created"`
		CreatedBy string    `json:"created_by"`
	}
	config, err := json.Marshal(struct {
		Architecture string    `json:"architecture"`
		OS           string    `json:"os"`
		Created      time.Time `json:"created"`
		Config       runConfig `json:"config"`
		RootFS       rootFS    `json:"rootfs"`
		History      []history `json:"history"`
	}{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      epoch,
		Config: runConfig{
			User:       img.User,
			Env:        []string{"PATH=/"},
			Entrypoint: []string{img.Path},
			WorkingDir: "/",
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{"sha256:" + layerHex}},
		History: []history{{Created: epoch, CreatedBy: "COPY " + img.Package + " " + img.Path}},
	})
	if err != nil {
		return nil, err
	}
	configDigest := sha256.Sum256(config)
	configName := hex.EncodeToString(configDigest[:]) + ".json"
	layerName := layerHex + "/layer.tar"

	manifest, err := json.Marshal([]struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{Config: configName, RepoTags: []string{img.Ref}, Layers: []string{layerName}}})
	if err != nil {
		return nil, err
	}
	return tarFiles([]tarFile{
		{name: configName, mode: 0o644, data: config},
		{name: layerHex + "/", mode: 0o755, dir: true},
		{name: layerName, mode: 0o644, data: layer},
		{name: "manifest.json", mode: 0o644, data: manifest},
	})
}

type tarFile struct {
	name string
	mode int64
	dir  bool
	data []byte
}

func tarFiles(files []tarFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Format: tar.FormatPAX}
		if f.dir {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
