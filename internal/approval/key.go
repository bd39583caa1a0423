package approval

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Key kinds: how an admin signs.
const (
	KindRaw = "raw" // an Ed25519 key from `vault admin keygen`; signatures in FormatRaw
	KindSSH = "ssh" // an OpenSSH ssh-ed25519 key; signatures in FormatSSHSIG
)

// Signature formats.
const (
	FormatRaw    = "raw"
	FormatSSHSIG = "sshsig"
)

// rawKeyType starts the public key line of a raw admin key.
const rawKeyType = "wormvault-ed25519"

// The package's sentinels.
var (
	// ErrBadKey: a public key that is not an accepted Ed25519 key.
	ErrBadKey = errors.New("approval: not an accepted admin public key")
	// ErrBadSignature: a signature that does not verify, or is in the
	// wrong format, namespace or key type.
	ErrBadSignature = errors.New("approval: bad signature")
)

// Key is an admin's public key.
type Key struct {
	Kind   string
	Public ed25519.PublicKey
}

// ParsePublicKey reads a public key line: "wormvault-ed25519 BASE64
// [comment]" (from `vault admin keygen`) or an OpenSSH "ssh-ed25519 AAAA...
// [comment]" line. Every other key type (RSA, ECDSA, ...) is refused: one
// algorithm, no downgrade.
func ParsePublicKey(line string) (Key, error) {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, rawKeyType+" ") {
		f := strings.Fields(line)
		b, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil || len(b) != ed25519.PublicKeySize {
			return Key{}, fmt.Errorf("%w: malformed %s key", ErrBadKey, rawKeyType)
		}
		return Key{Kind: KindRaw, Public: ed25519.PublicKey(b)}, nil
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Key{}, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if pub.Type() != ssh.KeyAlgoED25519 {
		return Key{}, fmt.Errorf("%w: %s keys are refused; use ssh-ed25519 or `vault admin keygen`", ErrBadKey, pub.Type())
	}
	ck, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return Key{}, fmt.Errorf("%w: cannot read the ssh-ed25519 key", ErrBadKey)
	}
	edk, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || len(edk) != ed25519.PublicKeySize {
		return Key{}, fmt.Errorf("%w: cannot read the ssh-ed25519 key", ErrBadKey)
	}
	return Key{Kind: KindSSH, Public: edk}, nil
}

// String returns the key's public key line, without a comment.
func (k Key) String() string {
	if k.Kind == KindSSH {
		pub, err := ssh.NewPublicKey(k.Public)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	}
	return rawKeyType + " " + base64.StdEncoding.EncodeToString(k.Public)
}

// Fingerprint is the key's SHA-256 fingerprint as OpenSSH prints it.
func (k Key) Fingerprint() string {
	pub, err := ssh.NewPublicKey(k.Public)
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(pub)
}

// Equal reports whether two keys are the same key of the same kind.
func (k Key) Equal(o Key) bool { return k.Kind == o.Kind && bytes.Equal(k.Public, o.Public) }

// Verify checks sig over msg against k. The format must be the one of the
// key's kind; an SSHSIG must carry this vault's namespace, an ssh-ed25519
// key, and exactly the enrolled key.
func (k Key) Verify(msg []byte, format string, sig []byte) error {
	if len(k.Public) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: no key", ErrBadSignature)
	}
	switch {
	case k.Kind == KindRaw && format == FormatRaw:
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k.Public, msg, sig) {
			return fmt.Errorf("%w: the Ed25519 signature does not verify", ErrBadSignature)
		}
		return nil
	case k.Kind == KindSSH && format == FormatSSHSIG:
		return verifySSHSIG(k.Public, msg, sig)
	}
	return fmt.Errorf("%w: a %s key signs in the %s format, not %q", ErrBadSignature, k.Kind, formatOf(k.Kind), format)
}

func formatOf(kind string) string {
	if kind == KindSSH {
		return FormatSSHSIG
	}
	return FormatRaw
}

func verifySSHSIG(enrolled ed25519.PublicKey, msg, armored []byte) error {
	sig, err := sshsig.Unarmor(armored)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	// The library accepts any namespace it is given, even an empty one,
	// and any key type: the allowlist is ours.
	if sig.Namespace != Namespace {
		return fmt.Errorf("%w: SSH signature namespace %q, want %q (sign with -n %s)", ErrBadSignature, sig.Namespace, Namespace, Namespace)
	}
	if sig.PublicKey.Type() != ssh.KeyAlgoED25519 || sig.Signature == nil || sig.Signature.Format != ssh.KeyAlgoED25519 {
		return fmt.Errorf("%w: SSH signature by a %s key; only ssh-ed25519 is accepted", ErrBadSignature, sig.PublicKey.Type())
	}
	pub, err := ssh.NewPublicKey(enrolled)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if !bytes.Equal(sig.PublicKey.Marshal(), pub.Marshal()) {
		return fmt.Errorf("%w: the SSH signature was made with another key", ErrBadSignature)
	}
	if sig.HashAlgorithm != sshsig.HashSHA512 && sig.HashAlgorithm != sshsig.HashSHA256 {
		return fmt.Errorf("%w: hash %q", ErrBadSignature, sig.HashAlgorithm)
	}
	if err := sshsig.Verify(bytes.NewReader(msg), sig, pub, sig.HashAlgorithm, Namespace); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}

// GenerateKey makes a raw admin key pair.
func GenerateKey() (ed25519.PrivateKey, Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, Key{}, fmt.Errorf("approval: generate key: %w", err)
	}
	return priv, Key{Kind: KindRaw, Public: pub}, nil
}

// WritePrivateKey writes a raw admin private key (PKCS #8 PEM) to a new
// file readable by its owner only; it never overwrites a file.
func WritePrivateKey(path string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("approval: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("approval: write key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("approval: write key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("approval: write key: %w", err)
	}
	return f.Close()
}

// ReadPrivateKey reads a raw admin private key file.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("approval: read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("approval: %s is not a PEM private key (make one with `vault admin keygen`)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("approval: %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("approval: %s is not an Ed25519 key", path)
	}
	return priv, nil
}

// PublicOf returns the raw admin public key of priv.
func PublicOf(priv ed25519.PrivateKey) Key {
	return Key{Kind: KindRaw, Public: priv.Public().(ed25519.PublicKey)}
}
