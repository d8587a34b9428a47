import t from 'tap'
import { atLeastVersion, VERSION } from '../../common/version.js'

t.test('atLeastVersion compares major, minor and patch as numbers', async t => {
  t.ok(atLeastVersion('0.2.0', '0.2.0'))
  t.ok(atLeastVersion('0.10.0', '0.2.0'), '10 > 2, not "1" < "2"')
  t.ok(atLeastVersion('1.0.0', '0.2.0'))
  t.ok(atLeastVersion('0.2.1-rc.1', '0.2.0'), 'a suffix is ignored')
  t.notOk(atLeastVersion('0.1.9', '0.2.0'))
  t.notOk(atLeastVersion('0.1.0', '0.2.0'), 'the relays that close their link on an unknown message')
  t.notOk(atLeastVersion('garbage', '0.2.0'), 'unreadable counts as older')
  t.ok(atLeastVersion(VERSION, '0.2.0'), `this build (${VERSION}) understands installers`)
})
