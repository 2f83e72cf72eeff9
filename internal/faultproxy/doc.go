// Package faultproxy is a TCP proxy on loopback for tests that break a link
// on purpose: Cut closes every connection and refuses new ones (a server
// gone: resets at once), Freeze stops forwarding in both directions without
// closing anything (a node that lost power: no FIN, no RST, silence),
// Restore forwards again. It owns no domain logic and is imported by tests
// only; it must not touch anything but the sockets it opens.
package faultproxy
