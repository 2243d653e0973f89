// Start kinesalite on 127.0.0.1 only (its CLI binds every interface); port from argv[2].
require('kinesalite')({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 50}).listen(Number(process.argv[2]), '127.0.0.1')
