// Sends one call of every type through Segment's own Node library, to the host given as the
// first argument, with the write key given as the second; the third is a prefix for message ids.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, prefix] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 200 })
analytics.on('error', (err) => { console.error('segment error', err); process.exitCode = 1 })
analytics.track({ messageId: `${prefix}-track`, anonymousId: 'node-anon', event: 'Node Order', properties: { total: 5 } })
analytics.page({ messageId: `${prefix}-page`, userId: 'node-user', name: 'Home', properties: { url: 'https://shop.example.com/home?x=1' } })
analytics.screen({ messageId: `${prefix}-screen`, userId: 'node-user', name: 'Settings' })
analytics.identify({ messageId: `${prefix}-identify`, userId: 'node-user', anonymousId: 'node-anon', traits: { plan: 'pro' } })
analytics.group({ messageId: `${prefix}-group`, userId: 'node-user', groupId: 'acme', traits: { seats: 3 } })
analytics.alias({ messageId: `${prefix}-alias`, userId: 'node-user', previousId: 'node-anon' })
await analytics.closeAndFlush({ timeout: 20000 })
