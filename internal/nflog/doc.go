// Package nflog reads the packets that nodefw's log rules send to an NFLOG
// group and writes each as one JSON line: the drop logs people read with
// `kubectl logs`.
//
// The packet path never waits for it: the kernel copies logged packets
// into the group's netlink socket and drops them when the socket's buffer
// is full (reported here as ENOBUFS), and the reader hands what it parses
// to the writer through a bounded queue, dropping lines when the writer
// falls behind. Both losses are counted, so memory stays bounded however
// fast packets are logged.
package nflog
