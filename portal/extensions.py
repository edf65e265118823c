"""The shared extension instances, bound to the app in create_app()."""
from authlib.integrations.flask_client import OAuth
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_socketio import SocketIO
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect

socketio = SocketIO()
login_manager = LoginManager()
oauth = OAuth()
talisman = Talisman()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
