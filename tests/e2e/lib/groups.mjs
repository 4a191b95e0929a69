// Sender keys (libsignal's group ciphers: distribution messages, groupEncrypt / groupDecrypt)
// and the sealed group meta live in the client library (clients/js/src/senderkeys.mjs,
// groupmeta.mjs); this module re-exports them as the tests import them.
export * from '../../../clients/js/src/senderkeys.mjs';
export * from '../../../clients/js/src/groupmeta.mjs';
