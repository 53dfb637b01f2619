"""One object holding every repository, built from one `Database`."""

from __future__ import annotations

from memoryd.storage.ai import AIStore
from memoryd.storage.categories import CategoryStore
from memoryd.storage.database import Database
from memoryd.storage.devices import DeviceStore
from memoryd.storage.events import EventStore
from memoryd.storage.files import FileStore
from memoryd.storage.jobs import JobStore
from memoryd.storage.memories import MemoryStore
from memoryd.storage.messages import MessageStore
from memoryd.storage.search import SearchStore
from memoryd.storage.users import RefreshTokenStore, UserStore
from memoryd.storage.whatsapp import WhatsAppStore


class Storage:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = UserStore(db)
        self.refresh_tokens = RefreshTokenStore(db)
        self.categories = CategoryStore(db)
        self.memories = MemoryStore(db)
        self.messages = MessageStore(db)
        self.events = EventStore(db)
        self.devices = DeviceStore(db)
        self.jobs = JobStore(db)
        self.ai = AIStore(db)
        self.whatsapp = WhatsAppStore(db)
        self.files = FileStore(db)
        self.search = SearchStore(db)
