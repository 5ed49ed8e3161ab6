from django.contrib import admin
from django.urls import path
from transactions import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("transactions/<str:transaction_id>/track", views.track, name="track"),
    path("transactions/<str:transaction_id>/tracker", views.tracker, name="tracker"),
]
