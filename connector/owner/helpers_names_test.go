package owner

import "github.com/pushlog/pushlog/schema"

// groupTopics are the group topics in the default namespace.
var groupTopics = groupTopicsOf(schema.DefaultNames())
